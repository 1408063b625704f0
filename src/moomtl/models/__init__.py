"""moomtl.models"""
