"""psframework's built-in model plugins (registered through entry points)."""
