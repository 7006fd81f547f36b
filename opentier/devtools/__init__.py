"""Developer tools that are not needed at run time (code generation)."""
