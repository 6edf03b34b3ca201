"""How the generate stage lays out what it writes, for its readers too: the report shows the fixed-noise grid and
``bobjax.aot`` counts the sampler calls per shard, without importing the stage itself."""

FIXED_NOISE_ROWS = 4  # Noise seeds (rows) of the fixed-noise grid.
# Its columns: this many classes spread evenly over the class list (bobjax.grid.spread), every class of a small dataset.
# Drawn before any classifier has run, so not the best or worst classes; spread, so not one corner of the list (CUB's
# first eight are three albatrosses, an ani and four auklets).
FIXED_NOISE_CLASSES = 8
FIXED_NOISE_GRID = "fixed_noise.png"  # In WORKDIR/synthetic/grids/.
SHARD_SIZE = 256  # Images per shard: a few minutes of work on one GPU, so a kill loses little.
