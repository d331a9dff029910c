"""Byte-level DICOM: transfer syntaxes, the streaming header reader, data set splicing, file meta.

No sockets and no XNAT: the inventory, the C-STORE sender and the sandbox all read DICOM through
this package.
"""
