"""moomtl.train"""
