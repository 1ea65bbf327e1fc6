import sys

from psframework.cli import main

sys.exit(main())
