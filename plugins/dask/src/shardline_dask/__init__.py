"""shardline_dask."""
