"""moomtl.data"""
