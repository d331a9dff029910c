"""Moving bytes to the server: REST import bodies and batches, C-STORE, resource uploads."""
