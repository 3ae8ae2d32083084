"""Deeploy: the network runs apps (processes, containers, AI plugins) its users submit.

Light to import: the spec, the signed requests and the runtime seam. The node service is loaded on
first use.
"""

from r1os.deeploy._spec import AppSpec, Health, Placement, Resources, load_spec, parse_spec, spec_from_data

__all__ = ["AppSpec", "Health", "Placement", "Resources", "load_spec", "parse_spec", "spec_from_data"]
