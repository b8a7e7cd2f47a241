"""The HTTP sidecar: REST, the events WebSocket, the console page, auth, links and metrics.

Entry point: :func:`bridge.sidecar.app.create_app`. The engine implements
:class:`bridge.sidecar.control.CallControl` and publishes live events on
:class:`bridge.sidecar.events.EventHub`.
"""
