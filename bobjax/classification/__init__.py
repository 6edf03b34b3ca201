"""The pieces of the classify stage (``bobjax/classify.py``): input, optimiser, train step, metrics."""
