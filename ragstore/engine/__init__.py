"""The engine: the parts the :class:`ragstore.Store` facade is composed of.

Data flows open -> chunk -> embed -> LMDB transaction -> index -> checkpoint.
No part imports the facade; each receives its collaborators when built.
"""
