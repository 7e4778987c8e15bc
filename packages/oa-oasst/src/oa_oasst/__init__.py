"""oa_oasst"""
