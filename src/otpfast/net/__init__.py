"""otpfast.net"""
