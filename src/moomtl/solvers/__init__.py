"""moomtl.solvers"""
