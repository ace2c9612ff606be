"""The benchmark (`make bench`, `python -m bench`): speed and memory of the core, the node,
the bag tools and the eval, printed as Markdown tables with the machine named."""
