"""Sphinx configuration: ``python -m sphinx -W -b html docs docs/_build/html`` (the ``docs`` extra)."""

import sb3_ppo_variants

project = "sb3_ppo_variants"
author = "sb3_ppo_variants developers"
release = version = sb3_ppo_variants.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]
exclude_patterns = ["_build"]
html_theme = "sphinx_rtd_theme"  # SB3's documentation theme
html_title = "sb3_ppo_variants"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # wide tables wrap instead of being cut

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
