"""balances"""
