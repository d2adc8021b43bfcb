// placeholder: the token API lands here.
