"""One module per data set adapter; each registers itself with @register_dataset."""
