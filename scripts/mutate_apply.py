#!/usr/bin/env python3
# mutate_apply.py FILE LINE COL TYPE: applies one gremlins mutant (as
# `gremlins unleash --dry-run` lists it: the operator at LINE:COL, 1-based)
# to FILE in place, and prints the mutated line. ./mutate.sh --by-hand
# uses it to re-run mutants outside gremlins.
import sys
f,line,col,typ=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]
L=open(f).read().split('\n')
s=L[line-1]; i=col-1
neg={'==':'!=','!=':'==','<':'>=','>=':'<','>':'<=','<=':'>'}
bnd={'<':'<=','<=':'<','>':'>=','>=':'>'}
ari={'+':'-','-':'+','*':'/','/':'*','%':'*'}
inc={'++':'--','--':'++'}
def tok(s,i):
    for n in (2,1):
        t=s[i:i+n]
        if t in neg or t in ari or t in inc: return t
    return s[i]
t=tok(s,i)
if typ=='CONDITIONALS_NEGATION': r=neg[t]
elif typ=='CONDITIONALS_BOUNDARY': r=bnd[t]
elif typ=='ARITHMETIC_BASE': r=ari[t]
elif typ=='INCREMENT_DECREMENT': r=inc[t]
elif typ=='INVERT_NEGATIVES':
    assert t=='-', (t,s); r='+'
else: sys.exit('unknown type '+typ)
L[line-1]=s[:i]+r+s[i+len(t):]
open(f,'w').write('\n'.join(L))
print(L[line-1].strip())
