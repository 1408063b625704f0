"""moomtl.pareto"""
