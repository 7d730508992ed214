"""dl_ray: every model of a deep-learning course, trained on Ray from a laptop to a GPU cluster."""
__version__ = "0.1.0"
