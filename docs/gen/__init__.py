"""The site's generated pages: each module renders one page from the code or the committed results.

`pages.py` is the mkdocs-gen-files script (mkdocs.yml) that writes them into the build, never into the tree.
"""
