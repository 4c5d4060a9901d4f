"""What realtime-gateway and orchestrator truly share.

Only the wire contract between them (`contract`), the `/ws` event names (`events`), JWT helpers
(`auth`), the JSON error shape (`errors`) and logging setup (`logging`). Nothing here imports a
heavy library: both services import it on their start-up path.
"""
