"""seqkd: distil large sequence models (teachers) into small, fast ones (students)."""

__version__ = "0.1.0"
