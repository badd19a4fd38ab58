"""The marketplace driver (MARKET_MAD ``ipfs``): one_market runs its actions on the frontend; they hold app
content on the frontend's Kubo node through the image store (``image_store``) and keep the catalogue of
apps in IPFS, under an IPNS name the admin owns."""
