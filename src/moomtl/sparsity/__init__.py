"""moomtl.sparsity"""
