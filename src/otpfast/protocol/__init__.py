"""otpfast.protocol"""
