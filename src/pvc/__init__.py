"""pvc: an asyncio-native hypervisor cluster manager."""

__version__ = "0.1.0"
