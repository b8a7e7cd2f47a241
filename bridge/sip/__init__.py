"""Sans-IO SIP: messages, SDP, transactions, dialogs and digest authentication.

Nothing in this package does I/O or imports asyncio or socket: callers hand in bytes and the
current time, and get back events, bytes to send and the next timer deadline.
"""
