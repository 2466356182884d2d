"""Repository-wide tools: set-up, demo, toolkit check, log plotting."""
