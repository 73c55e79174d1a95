"""Class vocabularies taken from other repositories, one module per dataset family.

Each module names the repository, path and commit its lists come from; :mod:`zegclip.data.classes`
registers the benchmarks that use them.
"""
