"""Access logs, metrics and GPU reports. Plain Python: the Ray side is an adapter
(`ray_adapter.py`) that the deployments pass in, so everything here runs without Ray.

Modules are imported by name, not re-exported here: `gpu` loads torch and the Gateway
must stay torch-free.
"""
