"""Model folders: the models shipped in the package, and content hashes used as revisions."""
