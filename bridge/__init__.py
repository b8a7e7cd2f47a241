"""bridge: a SIP call-transfer bridge between the 12345 hotline and the 110 police desk."""

from bridge import native

__version__ = "0.1.0"

native.install()
