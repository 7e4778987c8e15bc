"""oa_train"""
