"""The engine side: the adapter to the Docker SDK and the replacement's create body. It does
no registry work."""
