"""otpfast.store"""
