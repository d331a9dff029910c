"""The DICOM Upper Layer and DIMSE messages: PDUs, statuses, a Storage SCU and a Storage SCP.

No XNAT here; the byte-level handling of data sets is in :mod:`xnatio.dicom`.
"""
