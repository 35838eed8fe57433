"""outreach: lawful, humane collections messaging."""

__version__ = "0.1.0"
