"""DJ-LDML core: the three contracts (labels, face clips, prediction), the network and its losses.

No web, no queue, nothing of ours is imported from here (dependency direction: trainer → djldml ← service).
"""

__version__ = "0.1.0"
