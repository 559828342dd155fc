"""Cited reference tables of the fusion package (CSV): carbon factors, ecological zones,
FAO name -> ISO3 codes, published GEDI/FAO totals. A package so that setuptools ships them."""
