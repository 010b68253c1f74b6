"""Helpers for deploying the OBI webhook to kind and testing it there.

Pure parts (manifest checks, YAML rendering, kubectl JSON interpretation, collector output
parsing) are unit tested here; the parts that talk to a cluster are exercised by `make kind-test`.
"""
