"""Data layer: adapters -> protocols (recipes) -> cached artifacts -> DataModule."""
