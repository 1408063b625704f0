"""moomtl.experiments"""
