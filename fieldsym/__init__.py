"""fieldsym: symmetric field-to-field learning."""

__version__ = "0.1.0"
