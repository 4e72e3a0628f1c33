"""The synthetic shop: the generator of the embedded default data set (`generator`) and the
kinds of traffic it simulates (`sequential` shoppers, bots and hard negatives in `traffic`)."""
