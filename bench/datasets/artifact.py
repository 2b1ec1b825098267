"""Cached artifacts: what a protocol writes and every later stage reads.

Layout of one artifact folder, `<cache>/<dataset>/<protocol>-<hash12>/`:

events.parquet   one row per kept event, sorted by (seq, ts, original order):
                 seq UInt32 (0-based sequence index: a user or a session),
                 item UInt32 (1..n_items, never 0), behavior UInt8 (1..4 = pv, fav, cart, buy),
                 category UInt32 (0 = unknown, 1..n_categories), ts Int64 (Unix seconds;
                 the position in the line when the data has no time),
                 split UInt8 (0 train, 1 valid, 2 test: the window the event falls in).
train.parquet,   one row per example: pos UInt64 (row in events.parquet of the target),
valid.parquet,   start UInt64 (row of the first event of that sequence).
test.parquet     The history of an example is events[max(start, pos - max_len) : pos];
                 every example has a non-empty history. Training examples are every
                 prefix of the training window (augmentation after the split).
items.parquet    item UInt32, raw_item String, category UInt32, train_count UInt64
                 (support in the training window), sorted by item.
categories.parquet  category UInt32, raw_category String.
negatives_<split>.parquet  (only when sampled metrics are requested) one row per example
                 of the split, column negatives List[UInt32], frozen at prepare time.
meta.json        dataset, synthetic, protocol, protocol_version, params, hash,
                 raw_files [{path, size, mtime_ns, sha256}], counts, drops {reason: rows},
                 versions, created_at, files {name: {size, sha256}}; written last.

The folder is written under a temporary name and renamed into place, so a killed
prepare leaves no half artifact; a folder whose files do not match meta.json is
treated as corrupt and rebuilt.
"""
