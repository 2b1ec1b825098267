"""Named, versioned recipes: filter, sessionize, split, remap, augment (after the split)."""
