"""oa_data"""
