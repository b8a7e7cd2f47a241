"""bridge: a SIP call-transfer bridge between the 12345 hotline and the 110 police desk."""

__version__ = "0.1.0"
