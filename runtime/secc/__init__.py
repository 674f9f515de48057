"""The runtime's side of ISO 15118 (docs/iso15118.md): the SECC service as a device, and the link that
hands the committed set point and the safety layer's limits to it."""

from runtime.secc import driver, link

__all__ = ["driver", "link"]
