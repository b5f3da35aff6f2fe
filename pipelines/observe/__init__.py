"""What an operator sees: logging set-up, and redaction that keeps credentials out of every log and record."""
