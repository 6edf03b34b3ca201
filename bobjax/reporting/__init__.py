"""The report stage's parts: gathering results from run folders, and rendering them as HTML and Markdown."""
